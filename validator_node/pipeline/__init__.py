"""The epoch pipeline: what blocks carry and how decided blocks change the application state."""
