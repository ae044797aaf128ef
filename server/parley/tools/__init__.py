"""Tool execution on the server side: what the tool loop (``parley.domain``) calls.

- ``base``: ``ToolOutcome``, a tool's result as the model sees it;
- ``ssrf``: ``AddressGuard``, which addresses a tool URL may reach (PARLEY_TOOLS_ALLOWED_HOSTS);
- ``transport``: the HTTP client plumbing that connects only to addresses the guard vetted;
- ``http``: ``HttpToolRunner``, HTTP tools (the model's arguments POSTed to a URL);
- ``mcp``: ``McpTools``, tools of MCP servers over streamable HTTP.

Client tools (run by the client, submitted with ``SubmitToolOutputs``) need nothing here: the run
pauses and the client answers.
"""

#: Nothing is re-exported here: import from the submodules.
__all__: list[str] = []
