"""The running stack: which engine runs it, the file probe of a container, the live stack's facets."""
