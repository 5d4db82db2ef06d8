"""The flow every nodegraph deployment points at: ``flows/run_graph.py:run_graph``.

    prefect deploy flows/run_graph.py:run_graph -n hello -p local \
        --param graph=flows/examples/hello.yaml

Its parameters: ``graph`` (a document, a path or an fsspec URL such as
``s3://bucket/graph.yaml``), ``inputs``, ``outputs``, ``strategy`` and ``config``
(overrides, nested as in the YAML file). It lives in ``integration.prefect.deploy``;
this file gives deployments a path that does not depend on how nodegraph is installed.
"""

from integration.prefect.deploy import run_graph

__all__ = ["run_graph"]
