"""Device emulators: each speaks the bytes of one named commercial device, written from the maker's
manual (never from this project's drivers), with a physical side the reactor twin reads and
writes, and fault injection. Serve one on a pseudo-terminal with ``sim.pty_host.PtyHost`` or call
it in-process through ``sim.emulators.loopback.LoopbackTransport``."""
