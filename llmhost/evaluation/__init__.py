"""`llmhost eval`: score a server's answers to a QA set (metrics) and time how fast it gave them (runner)."""
