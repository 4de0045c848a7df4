"""Fleet tools: the simulator's results and their report (issue 11)."""
