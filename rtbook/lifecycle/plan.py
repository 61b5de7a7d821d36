"""A tenant rename, add or remove as one plan: file diffs, row changes and the order to roll them out.

The plan is a dry run. :meth:`LifecyclePlan.write` puts the changed files under a review
directory (never into the stack: the user copies them), and :func:`apply` writes only the
database part, in one transaction, with the prior rows kept in the result.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtbook.config.stack import Stack
from rtbook.exceptions import InputError
from rtbook.lifecycle.files import FileChange, StackFiles, add_files, remove_files, rename_files
from rtbook.lifecycle.rows import RowsPlan, apply_rows, plan_rows
from rtbook.results import CheckResult
from rtbook.secrets import Redactor
from rtbook.target import Target

__all__ = ["LifecyclePlan", "apply", "plan_add", "plan_remove", "plan_rename"]


@dataclass
class LifecyclePlan:
    """Everything one tenant lifecycle step changes, and the order to do it in."""

    action: str  # rename | add | remove
    tenant: str
    old_tenant: str
    gateway: str
    files: list[FileChange]
    rows: RowsPlan
    steps: list[str]
    notes: list[str] = field(default_factory=list)
    blocked: str = ""
    redactor: Redactor = field(default_factory=Redactor, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and redacted (diffs included; ``.env`` only as its one-line patch)."""
        data = {
            "action": self.action, "tenant": self.tenant, "old_tenant": self.old_tenant, "gateway": self.gateway,
            "blocked": self.blocked, "files": [{"path": f.path, "why": f.why, "new": f.before is None,
                                                "written_as": f.out_name, "diff": f.diff()} for f in self.files],
            "rows": {"tenants": list(self.rows.tenants), "reachable": self.rows.reachable,
                     "changes": [c.to_dict() for c in self.rows.changes], "notes": list(self.rows.notes)},
            "steps": list(self.steps), "notes": list(self.notes),
        }
        return dict(self.redactor.data(data))

    def diff(self) -> str:
        """Every file change as one unified diff."""
        return "".join(f.diff() for f in self.files)

    def write(self, out_dir: str | Path, stack_root: str | Path | None = None) -> list[Path]:
        """Write the changed files under ``out_dir`` (paths as in the stack) for review; returns what was written.

        Raises:
            InputError: ``out_dir`` is the stack directory or inside it (rtbook never edits the stack in place).
        """
        out = Path(out_dir)
        if stack_root is not None:
            root = Path(stack_root).resolve()
            if out.resolve() == root or root in out.resolve().parents:
                raise InputError(f"--out {out_dir} is inside the stack directory {stack_root}; rtbook does not edit "
                                 "the stack in place: pass a directory outside it, e.g. --out ./tenant-plan")
        written: list[Path] = []
        for f in self.files:
            dest = out / f.out_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(f.out_text(), encoding="utf-8")
            written.append(dest)
        return written

    def __str__(self) -> str:
        verb = {"rename": f"Rename tenant {self.old_tenant!r} -> {self.tenant!r}",
                "add": f"Add tenant {self.tenant!r}", "remove": f"Remove tenant {self.tenant!r}"}[self.action]
        lines = [f"{verb} ({self.gateway or 'no gateway'}; dry run: nothing was written)"]
        if self.blocked:
            lines.append(f"BLOCKED: {self.blocked}")
        lines.append("")
        lines.append(f"Files ({len(self.files)}):" if self.files else "Files: no change")
        for f in self.files:
            lines.append(f"  {f.path}{' (new)' if f.before is None else ''}: {f.why}")
        lines.append("")
        lines.append("Database:" if self.rows.changes else "Database: no row change planned")
        lines += [f"  {c}" for c in self.rows.changes]
        lines += [f"  note: {n}" for n in self.rows.notes]
        if self.notes:
            lines.append("")
            lines += [f"note: {n}" for n in self.notes]
        lines.append("")
        lines.append("Order of operations (no request sees a missing host or tenant):")
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        if self.files:
            lines.append("")
            lines.append(self.diff().rstrip("\n"))
        return self.redactor.text("\n".join(lines))

    def _repr_html_(self) -> str:
        esc = html.escape
        files = "".join(f"<li><code>{esc(f.path)}</code>: {esc(f.why)}</li>" for f in self.files)
        rows = "".join(f"<li><code>{esc(self.redactor.text(str(c)))}</code></li>" for c in self.rows.changes)
        notes = "".join(f"<li>{esc(self.redactor.text(n))}</li>" for n in [*self.rows.notes, *self.notes])
        steps = "".join(f"<li>{esc(s)}</li>" for s in self.steps)
        blocked = f"<p style='color:#c5221f'><b>Blocked:</b> {esc(self.blocked)}</p>" if self.blocked else ""
        return (f"<h4>Tenant {esc(self.action)}: <code>{esc(self.tenant)}</code> (dry run)</h4>{blocked}"
                f"<p>Files</p><ul>{files or '<li>no change</li>'}</ul><p>Database</p><ul>{rows or '<li>no change</li>'}"
                f"</ul>{f'<ul>{notes}</ul>' if notes else ''}<p>Order of operations</p><ol>{steps}</ol>"
                f"<pre>{esc(self.redactor.text(self.diff()))}</pre>")


def _stack(target: Target) -> Stack:
    if target.stack is None:
        raise InputError("a tenant rename/add/remove needs the stack's files: pass --stack DIR")
    return target.stack


def _names(files: StackFiles) -> tuple[list[str], list[str]]:
    compose = [f.out_name + (" (patch -p1)" if f.patch_only else "") for f in files.changes
               if "compose" in f.path or f.patch_only]
    gateway = [f.path for f in files.changes if not ("compose" in f.path or f.patch_only)]
    return compose, gateway


def plan_rename(target: Target, new: str, *, drop_old: bool = False) -> LifecyclePlan:
    """Plan renaming the stack's tenant to ``new``: override, gateway files, new rows (old kept unless ``drop_old``).

    Raises:
        InputError: bad name, no stack, unreadable gateway config.
        ConfigError: values needed to encrypt the new rows are missing.
    """
    stack = _stack(target)
    files = rename_files(stack, new)
    old = files.old_tenant
    keep = (f"tenant {old!r} keeps its rows (clients still on it keep working); remove them later with "
            f"--drop-old, or rtbook tenant remove {old} once the stack serves {new!r}")
    if old == new:
        drop_old, keep = False, ""
    elif not drop_old:
        # Both rows keep the seed's slot_name (the seed writes it again on restart); two pollers cannot share it.
        keep += (f"; until then both tenants use the replication slot name the seed writes, so postgres_changes "
                 f"reach only one of them at a time: move the clients, then remove {old!r}")
    rows = plan_rows(target, create=new, delete=old if drop_old else None, keep_note=keep) \
        if not files.blocked else RowsPlan((new,))
    rt = stack.realtime_service()
    rt_name = rt.name if rt else "realtime"
    gw = stack.gateway_service()
    gw_name = gw.name if gw else "the gateway"
    compose, gateway = _names(files)
    steps = [
        f"Database first: rtbook tenant rename {new} --stack DIR --apply --yes inserts tenant {new!r} and its one "
        f"postgres_cdc_rls row; {old!r} stays, so Realtime serves both (it reads tenants from the database, no "
        "restart).",
        f"Copy {', '.join(compose) or 'the override'} into the stack, then docker compose up -d {rt_name}: Realtime "
        f"gets SELF_HOST_TENANT_NAME={new}, its healthcheck asks for {new!r} and it answers to "
        f"{', '.join(files.hosts.values()) or 'the new host'} as well as the old name, so the gateway still works "
        "(clients reconnect once while Realtime restarts).",
        f"Copy {', '.join(gateway) or 'the gateway files'} into the stack, then docker compose up -d "
        f"--force-recreate {gw_name}: the gateway now sends Host {', '.join(files.hosts.values()) or new}, i.e. "
        f"tenant {new!r}.",
        f"Check: rtbook check --stack DIR --tenant {new} --live.",
        (f"Then tenant {old!r} has no traffic: its rows are deleted by this plan's apply (--drop-old)." if drop_old
         else f"When nothing uses {old!r} any more, delete its rows: rtbook tenant remove {old} --stack DIR "
         "--apply --yes."),
    ]
    return LifecyclePlan("rename", new, old, stack.gateway_kind() or "", files.changes, rows, steps,
                         notes=files.notes, blocked=files.blocked or rows.blocked, redactor=target.redactor)


def plan_add(target: Target, name: str, public_host: str) -> LifecyclePlan:
    """Plan serving tenant ``name`` on ``public_host`` from the same Realtime: its rows, a route and an alias."""
    stack = _stack(target)
    files = add_files(stack, name, public_host)
    # Its own replication slot: the stack's tenant polls the same database with the default slot name.
    rows = plan_rows(target, create=name, own_slot=True) if not files.blocked else RowsPlan((name,))
    compose, gateway = _names(files)
    gw = stack.gateway_service()
    rt = stack.realtime_service()
    steps = [
        f"Database first: rtbook tenant add {name} --stack DIR --apply --yes inserts tenant {name!r} and its one "
        "postgres_cdc_rls row (no restart: Realtime reads tenants from the database).",
        f"Copy {', '.join(compose) or 'no compose file'} into the stack, then docker compose up -d "
        f"{rt.name if rt else 'realtime'}: Realtime answers to {', '.join(files.hosts.values())} too.",
        f"Copy {', '.join(gateway) or 'the gateway file'} into the stack, then docker compose up -d --force-recreate "
        f"{gw.name if gw else 'the gateway'}: requests with Host {public_host} now reach tenant {name!r}; every "
        f"other host still reaches {files.old_tenant!r}.",
        f"Point DNS for {public_host} at the gateway, then: rtbook check --stack DIR --all-tenants --live.",
    ]
    return LifecyclePlan("add", name, files.old_tenant, stack.gateway_kind() or "", files.changes, rows, steps,
                         notes=files.notes, blocked=files.blocked or rows.blocked, redactor=target.redactor)


def plan_remove(target: Target, name: str, *, keep_rows: bool = False) -> LifecyclePlan:
    """Plan removing tenant ``name``: rtbook's routes and alias for it, then its rows (unless ``keep_rows``)."""
    stack = _stack(target)
    files = remove_files(stack, name)
    rows = RowsPlan((name,))
    if not files.blocked:
        rows = plan_rows(target, delete=None if keep_rows else name,
                         keep_note=f"tenant {name!r} keeps its rows (--keep-rows)" if keep_rows else "")
    compose, gateway = _names(files)
    gw = stack.gateway_service()
    steps = [
        f"Copy {', '.join(gateway) or 'the gateway file'} into the stack, then docker compose up -d --force-recreate "
        f"{gw.name if gw else 'the gateway'}: no request reaches {name!r} any more.",
        f"Copy {', '.join(compose) or 'no compose file'} into the stack (drops the network alias) and "
        "docker compose up -d for it when convenient.",
        (f"Last, rtbook tenant remove {name} --stack DIR --apply --yes deletes its rows (after the gateway stopped "
         "sending traffic, so no client sees 'tenant not found' mid-session)." if not keep_rows else
         "Its rows are kept (--keep-rows)."),
    ]
    return LifecyclePlan("remove", name, files.old_tenant, stack.gateway_kind() or "", files.changes, rows, steps,
                         notes=files.notes, blocked=files.blocked or rows.blocked, redactor=target.redactor)


def apply(target: Target, plan: LifecyclePlan, *, yes: bool = False) -> CheckResult:
    """Apply the database part of ``plan`` in one transaction (needs ``yes=True``); files are never touched."""
    return apply_rows(target, plan.rows, yes=yes)
