"""Tenant lifecycle: rename the stack's tenant, add or remove tenants of a multi-tenant Realtime.

``files`` plans the stack file changes (text edits, shown as diffs), ``rows`` the database rows,
``plan`` puts both together with the order of operations. Nothing edits the user's stack files.
"""

from rtbook.lifecycle.plan import LifecyclePlan, apply, plan_add, plan_remove, plan_rename

__all__ = ["LifecyclePlan", "apply", "plan_add", "plan_remove", "plan_rename"]
