"""The HTTP app: public pages and form signup, the JSON signup webhook, the admin API.

Build it with :func:`drip.web.app.create_app`; ``drip serve`` runs it under uvicorn.
"""
