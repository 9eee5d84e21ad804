"""Networks: they take tensors, never files."""
