"""Input pipelines, augmentation and the progressive schedule (issue 5)."""
