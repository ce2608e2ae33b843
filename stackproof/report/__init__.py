"""The report: rows, the session collector, outcomes and verdict, the files, history, waivers, rendering."""
