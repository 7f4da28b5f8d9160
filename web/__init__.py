"""The aiohttp web app: offers API, deals queries, the SSE deals stream, health, metrics."""
