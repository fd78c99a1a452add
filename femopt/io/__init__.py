"""Results: summary, history, VTU, pictures, progress output and exporters."""
