"""One isolated measurement: the parent's runner, the warm worker and its zygote, the child, target loading, verification, timing and the sandbox."""
