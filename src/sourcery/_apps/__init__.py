"""_apps"""
