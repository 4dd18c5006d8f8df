"""Inbound webhooks: SendGrid's Event Webhook and the checkout's purchase webhook.

Each one validates (signature) before it parses, parses before it stores, and answers 2xx only
once what it received is committed, so that the sender retries anything we did not keep.
"""
