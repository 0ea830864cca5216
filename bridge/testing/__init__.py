"""Tools that ship with bridge for trying it without an account: the Realtime simulator (with tool
calls and model-socket faults on demand), simulated Twilio callers, a fake business tool endpoint,
a fake of Twilio's call-update REST API, and the in-process stack behind ``bridge demo``. Nothing
in the service imports them."""
