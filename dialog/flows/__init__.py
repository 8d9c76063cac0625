"""Built-in flow files (a package so that they ship with the wheel)."""
