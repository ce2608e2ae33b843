"""harbor-gateway --config FILE --port N: LiteLLM's proxy server on harbor's config."""
import sys

from litellm.proxy.proxy_cli import run_server

if __name__ == "__main__":
    sys.exit(run_server())
