"""``nodegraph cache``: look into and clear the result cache.

$ nodegraph cache stats
$ nodegraph cache inspect 3f9c...
$ nodegraph cache clear --tier memory
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from integration.cache.envelope import CorruptEntry, ForgedEntry, unseal, written_at
from integration.cache.factory import cache_folder, hierarchy_for
from integration.cache.history import recent_runs
from integration.cli.options import ConfigOption, JsonOption
from integration.config import load_config

cache_app = typer.Typer(help="Look into and clear the node result cache.", no_args_is_help=True)
out = Console()


@cache_app.command("stats")
def stats(
    config_file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Entries and bytes per tier, and the cache use of the last runs."""
    config = load_config(config_file)
    cache = hierarchy_for(config.caching)
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
    tier: Annotated[str | None, typer.Option("--tier", help="Only this tier.")] = None,
    config_file: ConfigOption = None,
) -> None:
    """Delete cached results, from every tier or one."""
    config = load_config(config_file)
    cache = hierarchy_for(config.caching)
    names = [t.name for t in cache.tiers]
    if tier is not None and tier not in names:
        out.print(f"[red]error:[/] no tier {tier!r}; configured tiers: {', '.join(names)}")
        raise typer.Exit(1)
    cache.clear(tier)
    out.print(f"cleared {tier or ', '.join(names)}")


@cache_app.command("inspect")
def inspect(
    key: Annotated[str, typer.Argument(help="A node's cache key (see `run --json`).")],
    config_file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a key is stored, how old and large it is, and whether it verifies.

    Nothing is unpickled: only the record's metadata is read.
    """
    config = load_config(config_file)
    cache = hierarchy_for(config.caching)
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
            payload = unseal(entry, cache.secret)
            row["verified"] = True
            row["age_s"] = round(time.time() - written_at(entry), 1)
            row["metadata"] = json.loads(payload).get("metadata")
        except (CorruptEntry, ForgedEntry) as exc:
            row["verified"] = False
            row["problem"] = str(exc)
        except ValueError:
            row["metadata"] = None  # not a Prefect result record
        found.append(row)
    if as_json:
        print(json.dumps({"key": key, "tiers": found}))
    else:
        table = Table("tier", "present", "bytes", "age (s)", "verified", "detail")
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
                str(row.get("verified", "")),
                detail,
            )
        out.print(table)
    if not any(row.get("present") for row in found):
        raise typer.Exit(1)
