"""The serving API's routes, one router per concern (the OpenAPI document is built in `openapi`)."""
