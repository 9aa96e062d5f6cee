"""metatreedb 0.2.3's own test-suite, run unchanged against metatree (the drop-in promise)."""
