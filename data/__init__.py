"""Market data, stage by stage: collect (sources, collector) -> lake -> validate -> quarantine; synthetic markets."""
