"""Developer tools run as child processes: the local llama.cpp server and the LLM simulator."""
