"""`etude bench`: numbers, not tests (`run` runs the sections; `render` and `perform` measure the renderer)."""
