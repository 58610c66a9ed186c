"""Views: the windows, the late-data gate, and the SQL the hot commit keeps the views with."""
