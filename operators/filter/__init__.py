"""Quality filters: stats first, then keep/drop with a reason per rule."""
