"""Chat with a trained experiment: a service process per experiment (JSON lines over stdin/stdout) and
a client that starts it on demand and streams the answer."""
