"""ComfyUI import and round trips on 200 synthetic UI workflows of 5-200 nodes.

    python benchmarks/comfy_import.py [--workflows 200] [--seed 1]

Each workflow is a UI (0.4) workflow of ``nodes/comfy_testing`` nodes: image sources,
masks, lazy mixes and averages wired at random, reroutes and primitives, output
nodes, and instances of two subgraph definitions (one nested in the other); and V3
nodes of ``nodes/comfy_testing_v3`` with dotted inputs: Autogrow sums of linked slots
(``values.value0``) and DynamicCombos with linked members and nested options
(``mode.image1``, ``mode.shift.amount``). ``--no-dynamic`` leaves the V3 nodes out (the
workflows of earlier versions, for comparing per-node costs). Per workflow it times:

- ``import``: UI JSON -> ``Graph`` (subgraphs flattened, virtual nodes resolved),
- ``to_api`` and ``to_ui`` exports,
- the round trips API -> graph -> API and UI -> graph -> UI -> graph, which must be
  identities (checked for every workflow).

It reports the import time per node (nodes of the flattened graph) and the totals.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HALF = "b2222222-2222-4222-8222-222222222222"
BRIGHTEN = "a1111111-1111-4111-8111-111111111111"


def _definitions() -> list[dict[str, Any]]:
    """ "Half" averages an image with black; "Brighten" scales it, then uses "Half"."""
    half = {
        "id": HALF,
        "name": "Half",
        "inputs": [{"id": "h-in", "name": "image", "type": "IMAGE", "linkIds": [201]}],
        "outputs": [{"id": "h-out", "name": "IMAGE", "type": "IMAGE", "linkIds": [203]}],
        "nodes": [
            {
                "id": 1,
                "type": "TestVariadicAverage",
                "mode": 0,
                "inputs": [
                    {"name": "input1", "type": "IMAGE", "link": 201},
                    {"name": "input2", "type": "IMAGE", "link": 202},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [203]}],
            },
            {
                "id": 2,
                "type": "StubImage",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [202]}],
                "widgets_values": ["BLACK", 512, 512, 1],
            },
        ],
        "links": [
            {
                "id": 201,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 1,
                "target_slot": 0,
                "type": "IMAGE",
            },
            {
                "id": 202,
                "origin_id": 2,
                "origin_slot": 0,
                "target_id": 1,
                "target_slot": 1,
                "type": "IMAGE",
            },
            {
                "id": 203,
                "origin_id": 1,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    brighten = {
        "id": BRIGHTEN,
        "name": "Brighten",
        "inputs": [
            {"id": "b-in", "name": "image", "type": "IMAGE", "linkIds": [101]},
            {"id": "b-amount", "name": "amount", "type": "FLOAT", "linkIds": [102]},
        ],
        "outputs": [{"id": "b-out", "name": "IMAGE", "type": "IMAGE", "linkIds": [103]}],
        "nodes": [
            {
                "id": 1,
                "type": "TestIsChangedWithConstants",
                "mode": 0,
                "inputs": [
                    {"name": "image", "type": "IMAGE", "link": 101},
                    {"name": "value", "type": "FLOAT", "widget": {"name": "value"}, "link": 102},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [104]}],
                "widgets_values": [1.0],
            },
            {
                "id": 2,
                "type": HALF,
                "mode": 0,
                "inputs": [{"name": "image", "type": "IMAGE", "link": 104}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [103]}],
            },
        ],
        "links": [
            {
                "id": 101,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 1,
                "target_slot": 0,
                "type": "IMAGE",
            },
            {
                "id": 102,
                "origin_id": -10,
                "origin_slot": 1,
                "target_id": 1,
                "target_slot": 1,
                "type": "FLOAT",
            },
            {
                "id": 104,
                "origin_id": 1,
                "origin_slot": 0,
                "target_id": 2,
                "target_slot": 0,
                "type": "IMAGE",
            },
            {
                "id": 103,
                "origin_id": 2,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    return [brighten, half]


def synthetic_workflow(rng: random.Random, size: int, dynamic: bool = True) -> dict[str, Any]:
    """A UI workflow of about ``size`` top-level nodes (V3 ones with ``dynamic``)."""
    nodes: dict[int, dict[str, Any]] = {}
    links: list[list[Any]] = []
    images: list[int] = []  # nodes with an IMAGE output in slot 0

    def add(
        node_type: str,
        widgets: Any = None,
        inputs: list | None = None,
        output: str | None = "IMAGE",
    ) -> int:
        node_id = len(nodes) + 1
        node: dict[str, Any] = {
            "id": node_id,
            "type": node_type,
            "pos": [0, 0],
            "size": [200, 80],
            "flags": {},
            "order": node_id,
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": output, "type": output, "links": []}] if output else [],
            "properties": {"Node name for S&R": node_type},
        }
        if widgets is not None:
            node["widgets_values"] = widgets
        nodes[node_id] = node
        for name, kind, source, widget in inputs or []:
            entry: dict[str, Any] = {"name": name, "type": kind, "link": None}
            if widget:
                entry["widget"] = {"name": name}
            if source is not None:
                link_id = len(links) + 1
                links.append([link_id, source, 0, node_id, len(node["inputs"]), kind])
                nodes[source]["outputs"][0]["links"].append(link_id)
                entry["link"] = link_id
            node["inputs"].append(entry)
        return node_id

    def pick() -> int:
        return rng.choice(images[-12:])

    images.append(add("StubImage", [rng.choice(["BLACK", "WHITE"]), 512, 512, 1]))
    while len(nodes) < size - 1:
        roll = rng.random()
        if roll < 0.25 or len(images) < 2:
            images.append(add("StubImage", [rng.choice(["BLACK", "WHITE", "NOISE"]), 512, 512, 1]))
        elif roll < 0.45:
            mask = add("StubMask", [round(rng.random(), 2)], output="MASK")
            a, b = pick(), pick()
            images.append(
                add(
                    "TestLazyMixImages",
                    None,
                    [
                        ("image1", "IMAGE", a, False),
                        ("image2", "IMAGE", b, False),
                        ("mask", "MASK", mask, False),
                    ],
                )
            )
        elif roll < 0.6:
            images.append(add("TestVariadicAverage", None, [("input1", "IMAGE", pick(), False)]))
        elif roll < 0.7:
            reroute = add("Reroute", None, [("", "*", pick(), False)], output="IMAGE")
            images.append(reroute)
        elif roll < 0.8:
            primitive = add("PrimitiveNode", [round(rng.random(), 2), "fixed"], output="FLOAT")
            nodes[primitive]["outputs"][0]["widget"] = {"name": "value"}
            images.append(
                add(
                    "TestIsChangedWithConstants",
                    [1.0],
                    [("image", "IMAGE", pick(), False), ("value", "FLOAT", primitive, True)],
                )
            )
        elif roll < (0.9 if not dynamic else 0.84):
            images.append(
                add(
                    BRIGHTEN,
                    [round(rng.random(), 2)],
                    [("image", "IMAGE", pick(), False), ("amount", "FLOAT", None, True)],
                )
            )
        elif roll < (1.0 if not dynamic else 0.88):
            images.append(add(HALF, None, [("image", "IMAGE", pick(), False)]))
        elif roll < 0.94:
            if rng.random() < 0.5:
                widgets = ["mix", round(rng.random(), 2), ""]
                sockets = [("mode.image1", "IMAGE", pick(), False)]
                sockets.append(("mode.image2", "IMAGE", pick(), False))
            else:
                widgets = ["shifted", "up", round(rng.random(), 2), ""]
                sockets = [("mode.image", "IMAGE", pick(), False)]
            images.append(add("TestDynamicComboImage", widgets, sockets))
        else:
            slots = [
                (f"values.value{i}", "FLOAT", add("StubFloat", [0.5], output="FLOAT"), False)
                for i in range(rng.randint(1, 4))
            ]
            total = add("TestAutogrowSum", [1.0], slots, output="FLOAT")
            nodes[total]["outputs"][0]["name"] = "sum"  # as the class names it
            images.append(
                add(
                    "TestIsChangedWithConstants",
                    [1.0],
                    [("image", "IMAGE", pick(), False), ("value", "FLOAT", total, True)],
                )
            )
    add("TestRecord", ["out"], [("value", "*", images[-1], False)], output=None)
    return {
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": list(nodes.values()),
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "definitions": {"subgraphs": _definitions()},
        "version": 0.4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-dynamic", action="store_true", help="only V1 nodes, no dotted inputs")
    args = parser.parse_args()

    from integration.comfy import Signatures, import_workflow, to_api, to_ui
    from integration.graph import NodeRegistry

    test_packs = [ROOT / "nodes" / "comfy_testing"]  # no default registry loads them
    if not args.no_dynamic:
        test_packs.append(ROOT / "nodes" / "comfy_testing_v3")
    signatures = Signatures.from_registry(NodeRegistry.default(extra_paths=test_packs))
    rng = random.Random(args.seed)
    sizes = [5 + (195 * i) // max(args.workflows - 1, 1) for i in range(args.workflows)]
    rng.shuffle(sizes)
    workflows = [synthetic_workflow(rng, size, not args.no_dynamic) for size in sizes]
    texts = [json.dumps(w) for w in workflows]

    per_node: list[float] = []
    totals = {"import": 0.0, "to_api": 0.0, "to_ui": 0.0, "round trips": 0.0}
    flat_nodes = 0
    for text in texts:
        data = json.loads(text)
        started = time.perf_counter()
        graph = import_workflow(data, signatures).graph
        imported = time.perf_counter() - started
        totals["import"] += imported
        flat_nodes += len(graph.nodes)
        per_node.append(imported / len(graph.nodes))

        started = time.perf_counter()
        prompt = to_api(graph, signatures)
        totals["to_api"] += time.perf_counter() - started
        started = time.perf_counter()
        ui = to_ui(graph, signatures)
        totals["to_ui"] += time.perf_counter() - started

        started = time.perf_counter()
        again = import_workflow(json.loads(json.dumps(ui)), signatures, name=graph.name).graph
        assert again.to_document() == graph.to_document(), "UI -> graph -> UI -> graph changed"
        assert to_api(import_workflow(prompt, signatures).graph, signatures) == prompt, (
            "API -> graph -> API changed"
        )
        totals["round trips"] += time.perf_counter() - started

    dotted = sum(
        1
        for w in workflows
        for n in w["nodes"]
        if any("." in i["name"] for i in n["inputs"] if i.get("link") is not None)
    )
    print(
        f"{len(workflows)} UI workflows, {sum(sizes)} top-level nodes ({dotted} with dotted "
        f"inputs), {flat_nodes} nodes after flattening subgraphs; every round trip an identity"
    )
    print(
        f"import: {statistics.median(per_node) * 1e6:.1f} us per node (median), "
        f"{totals['import'] / flat_nodes * 1e6:.1f} us per node overall"
    )
    for name, seconds in totals.items():
        print(f"  {name:12s} {seconds * 1e3:8.1f} ms total")


if __name__ == "__main__":
    main()
