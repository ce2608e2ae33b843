"""The stack under test as its files declare it: the stack, its profile, its compose model, roles, credentials."""
