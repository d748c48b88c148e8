// The logging entry point: the daemon and every plugin log through swift-log, re-exported here so
// that there is exactly one LoggingSystem in the process (the one in this dynamic library).
@_exported import Logging
