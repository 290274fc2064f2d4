"""What a job does: profile, capture counters, tune, judge, nightly, apply, explain."""
