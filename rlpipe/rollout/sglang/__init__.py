"""SGLang rollout: engine client (`client`), server launcher (`server`), router (`router`), ServerArgs names.

Kept import-light: the config rules import `server_args` from here without torch, aiohttp or SGLang; import the
client, server and router modules directly where they are used.
"""
