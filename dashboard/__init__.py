"""The trader's page: what the bot holds, how it does, whether it is healthy; kill switch."""
