"""AWS Application Load Balancer settings from the files users have.

Accepted: the JSON printed by ``aws elbv2 describe-target-group-attributes``,
``describe-load-balancer-attributes`` or ``describe-target-groups``; Terraform (``aws_lb``,
``aws_lb_target_group``, ``aws_lb_listener``) read with python-hcl2; a CloudFormation template
(JSON or YAML, ``AWS::ElasticLoadBalancingV2::*``). An ALB forwards WebSocket upgrades on its own
over HTTP/1.1 target groups; what matters is the load balancer's ``idle_timeout.timeout_seconds``
(default 60), the target group's stickiness (``stickiness.enabled`` default false, ``stickiness.type``
``lb_cookie``/``app_cookie``, ``stickiness.lb_cookie.duration_seconds`` default 86400) and its
health check (``HealthCheckPath`` default ``/``, ``Matcher`` default ``200``). A file that holds
only some of them leaves the rest unknown (:attr:`LbConfig.settings` has what was read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rtbook.config.lb import Health, LbConfig, LbRoute, Setting, Sticky
from rtbook.exceptions import InputError

__all__ = ["parse"]


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _line(text: str, *needles: str) -> int | None:
    for needle in needles:
        for n, line in enumerate(text.splitlines(), start=1):
            if needle in line and not line.lstrip().startswith("#"):
                return n
    return None


class _Found:
    """Settings gathered from whichever format, keyed by their ``aws elbv2`` attribute names."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.settings: dict[str, Setting] = {}
        self.target_groups: list[str] = []
        self.target_groups_where = ""
        self.listener_protocols: list[Setting] = []

    def add(self, key: str, value: Any, *needles: str) -> None:
        value = _unquote(value)
        if isinstance(value, bool):
            value = "true" if value else "false"
        n = _line(self.text, *(needles or (key,)))
        self.settings[key] = Setting(key, str(value), f"{self.source}:{n}" if n else self.source)


def parse(path: Path, text: str) -> LbConfig:
    """Parse an ALB description (aws CLI JSON, Terraform or CloudFormation) into an :class:`LbConfig`."""
    source = str(path)
    found = _Found(source, text)
    if re.search(r'^\s*resource\s+"aws_lb', text, re.MULTILINE):
        _terraform(found)
        parser = "python-hcl2 (Terraform)"
    else:
        data = _load_json_or_yaml(text, source)
        if isinstance(data, dict) and isinstance(data.get("Resources"), dict):
            _cloudformation(found, data["Resources"])
            parser = "CloudFormation template"
        elif isinstance(data, dict) and ("Attributes" in data or "TargetGroups" in data or "LoadBalancers" in data):
            _cli(found, data)
            parser = "aws elbv2 describe-* JSON"
        else:
            raise InputError(f"{source}: not an ALB description (expected aws elbv2 describe-* JSON with "
                             "'Attributes' or 'TargetGroups', a Terraform aws_lb/aws_lb_target_group, or a "
                             "CloudFormation template); pass one of those")
    s = found.settings
    timeouts: tuple[Setting, ...] = ()
    if "idle_timeout.timeout_seconds" in s:
        t = s["idle_timeout.timeout_seconds"]
        timeouts = (Setting(t.name, t.value, t.where, float(t.value) if t.value.isdigit() else None),)
    sticky = None
    if any(k.startswith("stickiness.") for k in s):
        enabled = s.get("stickiness.enabled")
        kind = s.get("stickiness.type")
        duration = s.get("stickiness.lb_cookie.duration_seconds") or s.get("stickiness.app_cookie.duration_seconds")
        first = enabled or kind or duration
        sticky = Sticky(
            method=f"stickiness.type={kind.value if kind else 'lb_cookie (default)'}",
            where=first.where if first is not None else source,
            enabled=bool(enabled and enabled.value.lower() == "true"),
            duration_s=float(duration.value) if duration and duration.value.isdigit() else (
                86400.0 if enabled else None),
            detail=f"stickiness.enabled={enabled.value if enabled else 'false (default)'}",
        )
    health = None
    if found.target_groups and "HealthCheckPath" not in s and "Matcher" not in s:
        # The target group is described without a health check: the ALB's defaults apply (GET /, 200).
        health = Health("/", found.target_groups_where or source, expect="200 (ALB default)")
    if "HealthCheckPath" in s or "Matcher" in s:
        hp = s.get("HealthCheckPath")
        m = s.get("Matcher")
        health = Health(hp.value if hp else "/", hp.where if hp else (m.where if m else source),
                        expect=m.value if m else "200", port=s.get("HealthCheckPort", Setting("", "", "")).value)
    proto = s.get("ProtocolVersion")
    http11 = None if proto is None else proto.value.upper() in ("HTTP1", "")
    tls = any(p.value.upper() == "HTTPS" for p in found.listener_protocols)
    scheme = s.get("Protocol")
    name = found.target_groups[0] if found.target_groups else "target group"
    route = LbRoute(
        name=f"ALB → {name}",
        where=source,
        group="alb",
        upstream=name,
        http11=http11,
        upgrade=None,
        timeouts=timeouts,
        sticky=sticky,
        health=health,
        tls_listener=tls,
        backend_scheme=(scheme.value.lower() if scheme else "http"),
        notes=tuple(f"{k}={v.value}" for k, v in s.items()),
    )
    return LbConfig("alb", source, (source,), (route,), parser=parser, settings=dict(s))


def _load_json_or_yaml(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    class _CfnLoader(yaml.SafeLoader):  # CloudFormation short forms (!Ref, !Sub, !GetAtt...) as plain values
        pass

    def _any(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        assert isinstance(node, yaml.MappingNode)
        return loader.construct_mapping(node)

    _CfnLoader.add_multi_constructor("!", _any)
    try:
        return yaml.load(text, Loader=_CfnLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: neither JSON nor YAML ({exc}); fix the line named") from None


def _cli(found: _Found, data: dict[str, Any]) -> None:
    for attr in data.get("Attributes") or []:
        if isinstance(attr, dict) and "Key" in attr:
            found.add(str(attr["Key"]), attr.get("Value", ""), f'"{attr["Key"]}"')
    for tg in data.get("TargetGroups") or []:
        found.target_groups.append(str(tg.get("TargetGroupName", "target group")))
        for key in ("HealthCheckPath", "HealthCheckPort", "Protocol", "ProtocolVersion"):
            if key in tg:
                found.add(key, tg[key], f'"{key}"')
        if isinstance(tg.get("Matcher"), dict) and "HttpCode" in tg["Matcher"]:
            found.add("Matcher", tg["Matcher"]["HttpCode"], '"HttpCode"')


_TF_STICKY = {"enabled": "stickiness.enabled", "type": "stickiness.type",
              "cookie_duration": "stickiness.lb_cookie.duration_seconds"}


def _terraform(found: _Found) -> None:
    import hcl2  # imported here: only a Terraform --lb needs it

    try:
        tree = hcl2.loads(found.text)
    except Exception as exc:  # python-hcl2 raises lark errors of several types
        raise InputError(f"{found.source}: Terraform does not parse ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); fix the HCL there") from None
    for block in tree.get("resource") or []:
        for rtype, named in block.items():
            rtype = _unquote(rtype)
            for rname, body in named.items():
                rname = _unquote(rname)
                if rtype in ("aws_lb", "aws_alb"):
                    if "idle_timeout" in body:
                        found.add("idle_timeout.timeout_seconds", body["idle_timeout"], "idle_timeout")
                elif rtype in ("aws_lb_target_group", "aws_alb_target_group"):
                    found.target_groups.append(f'aws_lb_target_group.{rname}')
                    n = _line(found.text, f'"{rtype}" "{rname}"')
                    found.target_groups_where = f"{found.source}:{n}" if n else found.source
                    for key, attr in (("protocol", "Protocol"), ("protocol_version", "ProtocolVersion")):
                        if key in body:
                            found.add(attr, body[key], f"{key} ")
                    for st in body.get("stickiness") or []:
                        for key, attr in _TF_STICKY.items():
                            if key in st:
                                found.add(attr, st[key], f"{key} ")
                        if "stickiness.enabled" not in found.settings:  # Terraform: enabled defaults to true
                            found.add("stickiness.enabled", "true", "stickiness")
                    for hc in body.get("health_check") or []:
                        if "path" in hc:
                            found.add("HealthCheckPath", hc["path"], "path ")
                        if "matcher" in hc:
                            found.add("Matcher", hc["matcher"], "matcher")
                        if "port" in hc:
                            found.add("HealthCheckPort", hc["port"], "port ")
                elif rtype in ("aws_lb_listener", "aws_alb_listener") and "protocol" in body:
                    n = _line(found.text, "protocol")
                    found.listener_protocols.append(Setting("protocol", str(_unquote(body["protocol"])),
                                                            f"{found.source}:{n}"))


def _cloudformation(found: _Found, resources: dict[str, Any]) -> None:
    for logical, res in resources.items():
        if not isinstance(res, dict):
            continue
        rtype = res.get("Type", "")
        props = res.get("Properties") or {}
        if rtype == "AWS::ElasticLoadBalancingV2::LoadBalancer":
            for attr in props.get("LoadBalancerAttributes") or []:
                found.add(str(attr.get("Key")), attr.get("Value", ""), str(attr.get("Key")))
        elif rtype == "AWS::ElasticLoadBalancingV2::TargetGroup":
            found.target_groups.append(logical)
            n = _line(found.text, f"{logical}:")
            found.target_groups_where = f"{found.source}:{n}" if n else found.source
            for attr in props.get("TargetGroupAttributes") or []:
                found.add(str(attr.get("Key")), attr.get("Value", ""), str(attr.get("Key")))
            for key in ("HealthCheckPath", "HealthCheckPort", "Protocol", "ProtocolVersion"):
                if key in props:
                    found.add(key, props[key], key)
            if isinstance(props.get("Matcher"), dict) and "HttpCode" in props["Matcher"]:
                found.add("Matcher", props["Matcher"]["HttpCode"], "HttpCode")
        elif rtype == "AWS::ElasticLoadBalancingV2::Listener" and "Protocol" in props:
            n = _line(found.text, "Protocol")
            found.listener_protocols.append(Setting("Protocol", str(props["Protocol"]), f"{found.source}:{n}"))
