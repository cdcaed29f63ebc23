"""Pure campaign domain: models, segments, timetables, rendering. No I/O beyond reading the campaign file."""
