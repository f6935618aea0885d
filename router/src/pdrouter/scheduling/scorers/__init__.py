"""Scorers, one policy per module. Each rates candidates for one request; higher is better."""
