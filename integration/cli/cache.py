"""``nodegraph cache``: look into and clear the result cache.

$ nodegraph cache stats
$ nodegraph cache inspect 3f9c...
$ nodegraph cache verify --tier disk
$ nodegraph cache clear --tier memory
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from integration.cache.envelope import CorruptEntry, ForgedEntry, check, unseal, written_at
from integration.cache.factory import cache_folder, hierarchy_for
from integration.cache.hierarchy import CacheHierarchy
from integration.cache.history import recent_runs
from integration.cli.failures import print_error
from integration.cli.options import ConfigOption, JsonOption
from integration.config import NodegraphConfig, load_config
from integration.errors import NodegraphError
from integration.prefect.secrets import resolve_secret_block

cache_app = typer.Typer(help="Look into and clear the node result cache.", no_args_is_help=True)
out = Console()
TierOption = Annotated[str | None, typer.Option("--tier", help="Only this tier.")]


def _configured(config_file: Path | None) -> tuple[NodegraphConfig, CacheHierarchy]:
    """The configuration and its hierarchy, signing with the run's key; a configuration
    that cannot be used is an error message, not a traceback."""
    try:
        config = load_config(config_file)
        return config, hierarchy_for(resolve_secret_block(config.caching))
    except NodegraphError as exc:
        print_error(str(exc), out)
        raise typer.Exit(2) from None


@cache_app.command("stats")
def stats(
    config_file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Entries and bytes per tier, and the cache use of the last runs."""
    config, cache = _configured(config_file)
    tiers = [{"tier": s.name, "entries": s.entries, "bytes": s.bytes} for s in cache.stats()]
    runs = recent_runs(cache_folder(config.caching))
    executed = sum(r.get("executed", 0) for r in runs)
    cached = sum(r.get("cached", 0) for r in runs)
    hit_rate = cached / (executed + cached) if executed + cached else None
    if as_json:
        print(json.dumps({"tiers": tiers, "runs": runs, "hit_rate": hit_rate}))
        return
    table = Table("tier", "entries", "bytes", title="cache tiers", title_justify="left")
    for row in tiers:
        entries = "unavailable" if row["entries"] < 0 else str(row["entries"])
        table.add_row(row["tier"], entries, "" if row["bytes"] < 0 else f"{row['bytes']:,}")
    out.print(table)
    if runs:
        rate = f"{hit_rate:.0%}" if hit_rate is not None else "-"
        out.print(
            f"last {len(runs)} runs: {cached} nodes from the cache, {executed} "
            f"executed (hit rate {rate})"
        )
    else:
        out.print("no runs recorded yet", style="dim")


@cache_app.command("clear")
def clear(
    tier: TierOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Delete cached results, from every tier or one."""
    _, cache = _configured(config_file)
    names = [t.name for t in cache.tiers]
    if tier is not None and tier not in names:
        print_error(f"no tier {tier!r}; configured tiers: {', '.join(names)}", out)
        raise typer.Exit(1)
    cache.clear(tier)
    out.print(f"cleared {tier or ', '.join(names)}")


@cache_app.command("inspect")
def inspect(
    key: Annotated[str, typer.Argument(help="A node's cache key (see `run --json`).")],
    config_file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a key is stored, how old and large it is, and which key verifies it.

    Nothing is unpickled: only the record's metadata is read.
    """
    _, cache = _configured(config_file)
    found = []
    for tier in cache.tiers:
        try:
            entry = tier.get(key)
        except Exception as exc:
            found.append({"tier": tier.name, "present": None, "error": str(exc)})
            continue
        if entry is None:
            found.append({"tier": tier.name, "present": False})
            continue
        row: dict[str, Any] = {"tier": tier.name, "present": True, "bytes": len(entry)}
        try:
            payload = unseal(entry, cache.key)
        except (CorruptEntry, ForgedEntry) as exc:
            kind = "forged" if isinstance(exc, ForgedEntry) else "corrupt"
            row.update(verified=False, verified_by=None, problem=f"{kind}: {exc}")
        else:
            row.update(verified=True, verified_by=cache.key.describe())
            row["age_s"] = round(time.time() - written_at(entry), 1)
            row["metadata"] = _record_metadata(payload)
        found.append(row)
    if as_json:
        print(json.dumps({"key": key, "tiers": found}))
    else:
        table = Table("tier", "present", "bytes", "age (s)", "verified by", "detail")
        for row in found:
            detail = row.get("problem") or row.get("error") or ""
            if row.get("metadata"):
                serializer = (row["metadata"].get("serializer") or {}).get("type", "")
                detail = f"serializer {serializer}"
            table.add_row(
                row["tier"],
                str(row["present"]),
                str(row.get("bytes", "")),
                str(row.get("age_s", "")),
                _verified_by(row),
                detail,
            )
        out.print(table)
    if not any(row.get("present") for row in found):
        raise typer.Exit(1)


def _record_metadata(payload: bytes) -> dict[str, Any] | None:
    """A Prefect result record's metadata, read as JSON (never unpickled)."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None  # not a Prefect result record (a ComfyUI entry, say)
    return record.get("metadata") if isinstance(record, dict) else None


def _verified_by(row: dict[str, Any]) -> str:
    if "verified" not in row:
        return ""
    return row["verified_by"] or "none"


@cache_app.command("verify")
def verify(
    tier: TierOption = None,
    config_file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every entry of a tier (default: every tier) against the signing key.

    Nothing is unpickled. Forged entries (not signed with this key) and corrupt ones
    (damaged bytes) are listed; the exit code is 1 when there is any, 2 when a tier
    cannot be read.
    """
    _, cache = _configured(config_file)
    names = [t.name for t in cache.tiers]
    if tier is not None and tier not in names:
        print_error(f"no tier {tier!r}; configured tiers: {', '.join(names)}", out)
        raise typer.Exit(2)
    tiers: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for selected in (t for t in cache.tiers if tier is None or t.name == tier):
        summary: dict[str, Any] = {"tier": selected.name, "entries": 0, "verified": 0}
        summary.update(forged=0, corrupt=0)
        tiers.append(summary)
        try:
            for key in selected.keys():
                entry = selected.get(key)
                if entry is None:
                    continue  # removed since listed
                summary["entries"] += 1
                verdict = check(entry, cache.key)
                if verdict.ok:
                    summary["verified"] += 1
                    continue
                summary[verdict.problem] += 1
                bad.append(
                    {"tier": selected.name, "key": key, "problem": verdict.problem}
                    | {"detail": verdict.detail, "signer": verdict.signer}
                )
        except Exception as exc:  # an unreachable tier is reported, not a traceback
            summary["error"] = f"{type(exc).__name__}: {exc}"
    if as_json:
        print(json.dumps({"key": cache.key.describe(), "tiers": tiers, "bad": bad}))
    else:
        out.print(f"verifying with {cache.key.describe()}", highlight=False)
        for row in tiers:
            line = (
                f"{row['tier']}: {row['entries']} entries, {row['verified']} verified, "
                f"{row['forged']} forged, {row['corrupt']} corrupt"
            )
            if "error" in row:
                line += f"; cannot read the tier: {row['error']}"
            out.print(line, highlight=False)
        if bad:
            table = Table("tier", "key", "problem", "detail", title="entries that do not verify")
            for row in bad:
                table.add_row(row["tier"], row["key"], row["problem"], row["detail"])
            out.print(table)
    if bad:
        raise typer.Exit(1)
    if any("error" in row for row in tiers):
        raise typer.Exit(2)
