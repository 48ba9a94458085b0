"""``python -m cloud_bridge serve --host --port --database-url`` (and the other bridge commands)."""

from cloud_bridge.cli import main

main()
