"""zoo's built-in plugins, loaded through the ``zoo`` entry-point group like any third-party plugin."""
