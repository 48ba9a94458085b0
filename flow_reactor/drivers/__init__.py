"""Vendor drivers, one module per commercial device, each speaking its maker's documented serial
protocol over an injected ``flow_reactor.transport.Transport``. Pick one by role and vendor name
through ``flow_reactor.plugins``."""
