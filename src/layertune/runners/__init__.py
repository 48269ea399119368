"""Running the profiler on devices: transports (local, SSH), the device session skeleton both
share, and the device pool."""
