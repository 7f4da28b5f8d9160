"""Read models built from the event stream: tables, projection functions, queries."""
