"""What the controls ask about (InSpec's resources, testinfra's modules): alerting, breakers, faults, load,
keys, PromQL, tokens, the stack's scripts."""
