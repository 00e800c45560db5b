"""What people look at: plots, the notebook widgets, live training figures, and the figures and tables a run writes."""
