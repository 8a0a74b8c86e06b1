"""Placement and Ray: the plan, the placement group, and actor groups that stand in for the roles."""
