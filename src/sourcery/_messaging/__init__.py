"""_messaging"""
