"""Every touch of the outside world, bounded: subprocesses, the stack's files, YAML, the sandbox, local hosts.

The only code that opens a file of the stack under test lives here."""
