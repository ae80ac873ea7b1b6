"""Agents and teams on LangGraph, on the model layer: tools first (see ``tools``)."""
