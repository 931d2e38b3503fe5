"""Looking inside any cnnlab model. Each function returns arrays; the CLI and the web page draw
them."""
