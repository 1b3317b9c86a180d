"""ssmd operator: reconciles SsmdEnvironment resources into running collectors."""
