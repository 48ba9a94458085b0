"""The planner: task language, compiler and safety checks, scheduler, executor, optimizer,
experiment records. Pure Python; knows tasks and device roles, never a vendor driver, the
bridge's HTTP side or the twin."""
