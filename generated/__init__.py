"""Generated group modules (one per spec in group_specs/); regenerate with `groupgen generate`."""
