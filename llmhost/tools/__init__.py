"""Code tools: the sandbox that runs model-written Python and the verl-tool observation protocol."""
