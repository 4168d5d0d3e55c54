"""`llmhost bench`: a streaming load generator for llmhost and any OpenAI-compatible server."""
