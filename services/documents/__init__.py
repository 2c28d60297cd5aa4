"""Documents: the state machine that folds facts, chunking, and deck storage and assembly."""
