"""Tools that ship with bridge for trying it without an account: the Realtime simulator, simulated
callers and the in-process stack behind ``bridge demo``. Nothing in the service imports them."""
